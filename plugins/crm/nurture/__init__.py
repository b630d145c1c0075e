"""Nurturing: e-mail templates, follow-up sequences run by the scheduler, open and click tracking,
consent, unsubscribe and the suppression list, and a person's data export and erasure."""


def register(appbuilder) -> None:
    """Add the nurturing screens, public pages and REST API."""
    from . import api, privacy_views, public_views, template_views, views

    for part in (template_views, views, api, public_views, privacy_views):
        part.register(appbuilder)
