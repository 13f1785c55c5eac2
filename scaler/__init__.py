"""runqscale.scaler"""
