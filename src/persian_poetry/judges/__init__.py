"""Judges of generated verse: the poet classifier and the generation evaluation."""
