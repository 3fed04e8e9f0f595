"""edge subpackage."""
