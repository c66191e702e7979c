"""Energy management: metering, tariffs, bills, energy per unit produced, power sources."""
