"""Local development: run what pods on fake (kwok) nodes ask for as local processes, and bring up a whole stack."""
