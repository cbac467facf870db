"""Statistics files shipped with i0tscore, installed as the package ``i0tscore._stats``."""
