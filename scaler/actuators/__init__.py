"""runqscale.scaler.actuators"""
