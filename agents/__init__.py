"""Recipes: YAML configs for teachers and students, and the shipped teachers."""
