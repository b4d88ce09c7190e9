"""simbridge.training"""
