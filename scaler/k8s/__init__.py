"""runqscale.scaler.k8s: the scaler's Kubernetes side over plain HTTPS.

`client` (API calls, retries), `annotations` (per-workload opt-in), `events` (Kubernetes Events),
`leader` (Lease-based leader election), `controller` (the thin loop), `quantity` (CPU quantities).
"""
