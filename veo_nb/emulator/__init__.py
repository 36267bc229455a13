"""An emulator of the VEO service: a real HTTP server plus a media host."""
