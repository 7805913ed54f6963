"""Generated code scored against the ground truth, the way published work scores it."""
