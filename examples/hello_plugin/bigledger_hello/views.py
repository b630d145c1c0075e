"""A screen (with a menu item) and a REST endpoint."""
from flask_appbuilder import ModelView
from flask_appbuilder.api import BaseApi, expose, protect
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import gettext, lazy_gettext as _l

from bigledger_core.security import OwnedRecordsMixin

from .models import HelloGreeting


class HelloGreetingView(OwnedRecordsMixin, ModelView):
    datamodel = SQLAInterface(HelloGreeting)
    class_permission_name = "HelloGreeting"
    list_title = _l("Greetings")
    list_columns = ["message", "language", "created_at", "owner"]
    add_columns = edit_columns = ["message", "language"]
    label_columns = {"message": _l("Message"), "language": _l("Language"), "created_at": _l("Created"),
                     "owner": _l("Owner")}
    base_order = ("created_at", "desc")


class HelloApi(BaseApi):
    resource_name = "hello"
    class_permission_name = "HelloGreeting"
    method_permission_name = {"greet": "get"}

    @expose("/greet", methods=["GET"])
    @protect()
    def greet(self):
        """Greet the caller in their language.
        ---
        get:
          responses:
            200:
              description: A greeting
        """
        user = self.appbuilder.sm.current_user
        return self.response(200, message=gettext("Hello, %(name)s!", name=user.first_name),
                             user=user.username)
