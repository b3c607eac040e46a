"""Shared test helpers: DTB corpus, FDT writer, fake sysfs hosts."""
