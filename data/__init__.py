"""simbridge.data"""
