"""Pairing datasets by sky position: nearest-neighbour and host-galaxy matching, and the
paired builder that writes the result as a hub dataset (`mmu crossmatch`)."""
