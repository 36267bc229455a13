"""pytest plugin of veo_nb: the ``veo_emulator`` fixture."""
