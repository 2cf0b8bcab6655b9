"""The search loop, the state it carries between steps, and what it measures about itself."""
