"""The serving layer: Prometheus metrics, the /observe document, Grafana dashboards; reads
snapshots, never the host."""
