"""Compatibility with clients built by other tools from this platform's contracts."""
