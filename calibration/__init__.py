"""simbridge.calibration"""
