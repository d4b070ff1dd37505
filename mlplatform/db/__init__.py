"""Database backends of the project (engines named in settings.DATABASES)."""
