"""smtp package."""
