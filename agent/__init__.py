"""runqscale.agent"""
