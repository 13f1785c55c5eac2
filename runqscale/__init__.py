"""runqscale: eBPF run-queue latency per container, exported to Prometheus, driving autoscaling.

The code lives in the card's top-level folders (probes/, agent/, exporter/, scaler/, ...), which
setup.cfg installs as subpackages of this one: the pipeline is probes -> agent -> exporter ->
Prometheus -> scaler -> actuator.
"""

__version__ = "0.1.0"
