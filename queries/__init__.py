"""The read API over the projections."""
