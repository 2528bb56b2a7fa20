"""otp package."""
