"""Generated from proto/ by tools/gen. Do not edit."""
