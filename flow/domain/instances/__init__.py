"""Instance types, the GPU catalog, offers and matching, placement and the local GPU queue."""
