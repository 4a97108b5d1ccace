"""Emitters for operator groups made by the merge passes."""
