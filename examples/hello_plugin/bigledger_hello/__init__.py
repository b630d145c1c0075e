"""Hello example: a menu item, a REST endpoint, an event listener and its own zh/en strings."""
