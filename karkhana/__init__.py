"""karkhana: an open-source Industrial IoT platform for small and medium factories."""

__version__ = "0.1.0"
