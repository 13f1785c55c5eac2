"""runqscale.exporter"""
