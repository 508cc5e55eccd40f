"""The OpenAI-compatible gateway: ``app`` (the ASGI app: auth, routing, state from the DB), ``proxy`` (one request
relayed to a replica), ``protocol`` (the wire format, pure), ``routes`` (replica choice, pure), ``metrics``."""
