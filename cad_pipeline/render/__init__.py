"""Orthographic views of built solids: cameras, exact hidden-line removal, drawing and PNG encoding."""
