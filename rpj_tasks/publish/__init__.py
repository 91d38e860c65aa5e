"""Publish a validated snapshot: the RPv2 listings files and a release manifest (``stage``)."""
