"""runqscale.validation"""
