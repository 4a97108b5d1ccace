"""Emitters for Nengo's learning rule operators."""
