# Helpers shared by scripts/bench-*.sh (sourced, not run).

# Seconds in a loadgen duration (10s, 500ms, 1m30s), as a decimal number.
dur_secs() { python3 -c '
import re, sys
t = 0.0
for num, unit in re.findall(r"([0-9.]+)(ns|us|ms|s|m|h)", sys.argv[1]):
    t += float(num) * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
print(t)' "$1"; }

# A free loopback port (udp or tcp): bound once by the kernel, then released.
free_port() { python3 -c '
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' "$1"; }

# Prints a plain Butler SOS file: user events on 127.0.0.1:UDP_PORT into the InfluxDB 1.x at 127.0.0.1:TCP_PORT
# (database senseops). Callers append their `sense-ingest:` section.
butler_influx_config() {
  cat <<EOF
Butler-SOS:
  logLevel: info
  userEvents:
    enable: true
    udpServerConfig:
      serverHost: 127.0.0.1
      portUserActivityEvents: $1
    sendToInfluxdb:
      enable: true
  influxdbConfig:
    enable: true
    host: 127.0.0.1
    port: $2
    version: 1
    v1Config:
      dbName: senseops
      retentionPolicy:
        name: 10d
        duration: 10d
EOF
}
