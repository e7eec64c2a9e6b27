"""n2s_eds."""
