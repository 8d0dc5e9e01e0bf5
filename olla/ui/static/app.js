// Placeholder: the uipage branch replaces this file.
export {};
