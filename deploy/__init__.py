"""simbridge.deploy"""
