"""OpenWrt's front doors: ubus, UCI and the rpcd plugin behind LuCI."""
