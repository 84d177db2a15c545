"""Pure tensor math, no I/O, no models: each function returns ``(loss, stats)`` or a tensor and cites its source."""
