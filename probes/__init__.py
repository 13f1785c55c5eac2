"""runqscale.probes"""
