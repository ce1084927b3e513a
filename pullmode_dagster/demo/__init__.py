"""The local demo: a loopback API shaped like the vendors' audit APIs, and demo sources over it."""
