"""The platform kernel: everything the domain modules share, and no domain code."""
