package adminapi

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// DeviceRegistry is what the ActiveSync device routes need;
// *accounting.Registry implements it. When Options.Registry does not, those
// routes answer 501.
type DeviceRegistry interface {
	Devices(user string) []accounting.DeviceInfo
	BlockDevice(user, id, reason, by string) (int, error)
	AllowDevice(user, id string) (bool, error)
	DropDevice(user, id, reason string) int
	ResyncDevice(ctx context.Context, user, id string) ([]accounting.ResyncStep, error)
}

var _ DeviceRegistry = (*accounting.Registry)(nil)

func (s *Server) deviceRegistry() (DeviceRegistry, error) {
	d, ok := s.reg.(DeviceRegistry)
	if !ok {
		return nil, apiErr(http.StatusNotImplemented, CodeNotImplemented, "this registry keeps no devices")
	}
	return d, nil
}

// DeviceBlockJSON is an administrator's block of a device.
type DeviceBlockJSON struct {
	Reason  string    `json:"reason"`
	By      string    `json:"by"` // the token's name
	Created time.Time `json:"created"`
}

// DeviceJSON is one ActiveSync device of a user.
type DeviceJSON struct {
	ID          string      `json:"id"`
	Type        string      `json:"type"`
	UserAgent   string      `json:"user_agent"`
	LastCommand string      `json:"last_command"`
	FirstSeen   *time.Time  `json:"first_seen"` // null: never seen (blocked before it came)
	LastSeen    *time.Time  `json:"last_seen"`
	LastIP      *netip.Addr `json:"last_ip"`
	LastRefused *time.Time  `json:"last_refused"` // the last request mailgate refused, or null
	Live        int         `json:"live"`         // requests in flight (a waiting Ping is one)
	// Blocked: an administrator blocked the device (Block says who, when
	// and why).
	Blocked bool             `json:"blocked"`
	Block   *DeviceBlockJSON `json:"block"`
	// TypeRefused: the configured device types (eas.allow_device_types,
	// eas.block_device_types) refuse the device's type.
	TypeRefused bool `json:"type_refused"`
}

// DeviceList is the body of GET /api/v1/users/{user}/devices: the device
// seen last first, blocked devices never seen last.
type DeviceList struct {
	User    string       `json:"user"`
	Devices []DeviceJSON `json:"devices"`
}

// DeviceResult is the body of the device block and allow routes.
type DeviceResult struct {
	User     string `json:"user"`
	DeviceID string `json:"device_id"`
	Blocked  bool   `json:"blocked"` // the state after the change
	Dropped  int    `json:"dropped"`
}

// DeviceResyncResult is the body of POST .../devices/{id}/resync.
type DeviceResyncResult struct {
	User     string       `json:"user"`
	DeviceID string       `json:"device_id"`
	Steps    []ResyncStep `json:"steps"`
}

func toDevice(d accounting.DeviceInfo) DeviceJSON {
	out := DeviceJSON{ID: d.ID, Type: d.Type, UserAgent: d.UserAgent, LastCommand: d.LastCommand,
		FirstSeen: wireTime(d.FirstSeen), LastSeen: wireTime(d.LastSeen), LastIP: wireIP(d.LastIP),
		LastRefused: wireTime(d.LastRefused), Live: d.Live, Blocked: d.Blocked != nil, TypeRefused: d.TypeRefused}
	if b := d.Blocked; b != nil {
		out.Block = &DeviceBlockJSON{Reason: b.Reason, By: b.By, Created: mustTime(b.Created)}
	}
	return out
}

// pathDevice parses the {user} and {id} of a device route (no query
// parameter is taken).
func pathDevice(r *http.Request) (user, id string, err error) {
	if user, _, err = pathUser(r); err != nil {
		return "", "", err
	}
	id = r.PathValue("id")
	if accounting.DeviceKey(id) == "" {
		return "", "", badRequest("device id %s is not one: 1 to 128 bytes of UTF-8 without white space or control characters", quote(id))
	}
	return user, id, nil
}

// userDevices: GET /api/v1/users/{user}/devices.
func (s *Server) userDevices(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deviceRegistry()
	if err != nil {
		return err
	}
	user, _, err := pathUser(r)
	if err != nil {
		return err
	}
	ds := d.Devices(user)
	out := DeviceList{User: user, Devices: make([]DeviceJSON, 0, len(ds))}
	for _, x := range ds {
		out.Devices = append(out.Devices, toDevice(x))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// beginDeviceChange is the start of a change to one device: the registry,
// the user and the device of the path, and the change with its reason.
func (s *Server) beginDeviceChange(w http.ResponseWriter, r *http.Request) (DeviceRegistry, string, string, change, error) {
	d, err := s.deviceRegistry()
	if err != nil {
		return nil, "", "", change{}, err
	}
	user, id, err := pathDevice(r)
	if err != nil {
		return nil, "", "", change{}, err
	}
	ch, err := s.beginChange(w, r)
	if err != nil {
		return nil, "", "", change{}, err
	}
	return d, user, id, ch, nil
}

// deviceEntry starts the audit entry of a change to one device: its target
// is the user, the device is a parameter.
func deviceEntry(action, user, id string) accounting.AuditEntry {
	return accounting.AuditEntry{Action: action, Target: user, Params: map[string]string{"device": id}}
}

// blockDevice: POST /api/v1/users/{user}/devices/{id}/block {"reason"}:
// the device's requests get 403 from mailgate from now on; its live ones
// are dropped. A device not seen yet may be blocked too.
func (s *Server) blockDevice(w http.ResponseWriter, r *http.Request) error {
	d, user, id, ch, err := s.beginDeviceChange(w, r)
	if err != nil {
		return err
	}
	n, err := d.BlockDevice(user, id, ch.reason, ch.actor)
	e := deviceEntry("block_device", user, id)
	if err != nil {
		e.Outcome = err.Error()
		s.record(ch, e)
		return err
	}
	e.OK, e.Dropped, e.Outcome = true, n, "blocked, "+droppedText(n)
	s.record(ch, e)
	s.log.Info("admin api: block device", "route", r.Pattern, "user", user, "device", id, "dropped", n, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, DeviceResult{User: user, DeviceID: id, Blocked: true, Dropped: n})
	return nil
}

// allowDevice: POST /api/v1/users/{user}/devices/{id}/allow: lifts the
// block (404 when the device is not blocked).
func (s *Server) allowDevice(w http.ResponseWriter, r *http.Request) error {
	d, user, id, ch, err := s.beginDeviceChange(w, r)
	if err != nil {
		return err
	}
	found, err := d.AllowDevice(user, id)
	e := deviceEntry("allow_device", user, id)
	e.OK, e.Outcome = found && err == nil, "allowed"
	switch {
	case err != nil:
		e.Outcome = err.Error()
	case !found:
		e.Outcome = "the device was not blocked"
	}
	s.record(ch, e)
	if err != nil {
		return err
	}
	if !found {
		return notFound("device %s of %s is not blocked", quote(id), user)
	}
	s.log.Info("admin api: allow device", "route", r.Pattern, "user", user, "device", id, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, DeviceResult{User: user, DeviceID: id, Blocked: false})
	return nil
}

// dropDevice: POST /api/v1/users/{user}/devices/{id}/drop -> {"dropped":N}:
// the device's live requests (a waiting Ping) end; it comes back.
func (s *Server) dropDevice(w http.ResponseWriter, r *http.Request) error {
	d, user, id, ch, err := s.beginDeviceChange(w, r)
	if err != nil {
		return err
	}
	n := d.DropDevice(user, id, dropReason)
	e := deviceEntry("drop_device", user, id)
	e.OK, e.Dropped, e.Outcome = true, n, droppedText(n)
	s.record(ch, e)
	s.log.Info("admin api: drop device", "route", r.Pattern, "user", user, "device", id, "dropped", n, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, DropResult{Dropped: n})
	return nil
}

// resyncDevice: POST /api/v1/users/{user}/devices/{id}/resync: drop the
// device's live requests and run the eas resync hook with {device}.
func (s *Server) resyncDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deviceRegistry()
	if err != nil {
		return err
	}
	user, id, err := pathDevice(r)
	if err != nil {
		return err
	}
	bodyReason, err := decodeReason(w, r)
	if err != nil {
		return err
	}
	switch {
	case !accounting.ValidHookUser(user):
		return badUserForHook(user)
	case !accounting.ValidHookDevice(id):
		return badRequest("device id %s cannot be passed to a resync hook (letters, digits, . _ = + - only, not first -)", quote(id))
	}
	ch, err := s.begin(r, bodyReason)
	if err != nil {
		return err
	}
	steps, err := d.ResyncDevice(r.Context(), user, id)
	res := DeviceResyncResult{User: user, DeviceID: id, Steps: []ResyncStep{}}
	for _, st := range steps {
		rs := ResyncStep{Step: st.Step, OK: st.OK, Detail: st.Detail}
		if st.Step == "drop" {
			rs.dropped = st.Count
		}
		res.Steps = append(res.Steps, rs)
	}
	// The entry of a user's resync, for the device.
	e := resyncEntry(user, "eas", ResyncResult{Steps: res.Steps}, err)
	e.Action, e.Params = "resync_device", map[string]string{"device": id}
	s.record(ch, e)
	if errors.Is(err, accounting.ErrBadUser) || errors.Is(err, accounting.ErrBadDevice) {
		return badRequest("%s", err.Error())
	}
	if err != nil {
		return err
	}
	s.log.Info("admin api: resync device", "route", r.Pattern, "user", user, "device", id, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
	return nil
}
