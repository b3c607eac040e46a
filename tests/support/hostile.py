"""XML that a hardened parser must refuse: entities that read files or expand without bound."""
from __future__ import annotations

__all__ = ["XXE", "LAUGHS", "PARAMETER_ENTITY"]

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<domain><name>&xxe;</name></domain>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><domain>&lol3;</domain>"""
PARAMETER_ENTITY = b"""<!DOCTYPE d [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><domain/>"""
