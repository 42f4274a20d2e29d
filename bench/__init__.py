"""The performance benchmark: holds the generated service to its budget (DESIGN section 5)."""
