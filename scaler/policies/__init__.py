"""runqscale.scaler.policies"""
