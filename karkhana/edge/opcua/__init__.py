"""OPC UA servers the edge subscribes to: the ``[[opcua]]`` tables of its config."""

from karkhana.edge.opcua.servers import OpcUaServer, parse_servers

__all__ = ["OpcUaServer", "parse_servers"]
