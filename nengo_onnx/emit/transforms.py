"""Emitters for Nengo's convolution transforms."""
