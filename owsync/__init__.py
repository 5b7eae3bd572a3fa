"""owsync: multi-master file synchronization for OpenWrt routers."""

__version__ = "2.0.0"
