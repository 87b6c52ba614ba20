package adminapi

// RouteRoles is every registered route pattern and the role it needs.
func (s *Server) RouteRoles() map[string]string { return s.roles }
