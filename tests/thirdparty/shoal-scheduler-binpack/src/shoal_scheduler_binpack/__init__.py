"""A third-party shoal scheduler: pack tasks tightly instead of spreading them."""
