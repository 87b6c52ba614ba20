package accounting

// The roles of the admin API's named tokens. adminapi enforces them and
// configs validates the names; they are defined here, once, because both
// import accounting and neither may import the other.
const (
	// RoleViewer reads everything and changes nothing.
	RoleViewer = "viewer"
	// RoleOperator may also drop connections, resync users and enable or
	// disable a protocol for a user or a whole domain.
	RoleOperator = "operator"
	// RoleAdmin may do everything: IP blocks, lockouts and bulk actions too.
	RoleAdmin = "admin"
)

// Roles lists the roles from the least to the most allowed.
var Roles = []string{RoleViewer, RoleOperator, RoleAdmin}

// RoleRank orders the roles: 1 for viewer up to 3 for admin, 0 for a name
// that is not a role. A role may do what every lower-ranked one may.
func RoleRank(role string) int {
	for i, r := range Roles {
		if r == role {
			return i + 1
		}
	}
	return 0
}
