"""Versioned prompt templates and instruction libraries (to come)."""
